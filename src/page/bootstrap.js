(function () {
  if (window.__roomcastChannel) return;
  window.__roomcastChannel = true;
  var address = "__ROOMCAST_CHANNEL__";
  var chatOverlay = __ROOMCAST_CHAT_OVERLAY__;
  var chatPanel = null;
  function drawChat(state) {
    if (!chatOverlay || !document.body) return;
    var lines = (state && state.chat) ? state.chat.slice(-5) : [];
    if (!chatPanel) {
      chatPanel = document.createElement("div");
      chatPanel.id = "roomcast-chat";
      chatPanel.style.cssText = "position:fixed;right:24px;bottom:24px;width:400px;" +
        "background:#101010;color:#ffffff;font:20px/1.35 'DejaVu Sans',sans-serif;" +
        "padding:12px 16px;border-radius:8px;z-index:2147483647;display:none;" +
        "overflow:hidden;word-wrap:break-word;";
      document.body.appendChild(chatPanel);
    }
    chatPanel.textContent = "";
    for (var i = 0; i < lines.length; i++) {
      var row = document.createElement("div");
      var who = document.createElement("b");
      who.textContent = lines[i].name + ": ";
      row.appendChild(who);
      row.appendChild(document.createTextNode(lines[i].text));
      chatPanel.appendChild(row);
    }
    chatPanel.style.display = lines.length ? "block" : "none";
  }
  var rc = window.roomcast = window.roomcast || {};
  rc.state = rc.state || null;
  var ws = null;
  var lastRegions = "";
  function regions() {
    var out = [];
    var marked = document.querySelectorAll("[data-roomcast-tile]");
    for (var i = 0; i < marked.length; i++) {
      var el = marked[i];
      var r = el.getBoundingClientRect();
      if (r.width < 1 || r.height < 1) continue;
      var z = parseInt(window.getComputedStyle(el).zIndex, 10);
      out.push({
        fill: el.getAttribute("data-roomcast-tile"),
        fit: el.getAttribute("data-roomcast-fit") || null,
        x: r.left, y: r.top, w: r.width, h: r.height,
        z: isNaN(z) ? null : z
      });
    }
    return JSON.stringify({
      type: "regions",
      viewport: [window.innerWidth, window.innerHeight],
      layer: layer(),
      regions: out
    });
  }
  // "background": the page is drawn under the tiles instead of over them.
  function layer() {
    var el = document.documentElement;
    var v = (el && el.getAttribute("data-roomcast-layer")) ||
      (document.body && document.body.getAttribute("data-roomcast-layer")) || "overlay";
    return v === "background" ? "background" : "overlay";
  }
  var greeted = false;
  function report() {
    if (!ws || ws.readyState !== 1 || !greeted) return;
    var m = regions();
    if (m !== lastRegions) { lastRegions = m; ws.send(m); }
  }
  function connect() {
    ws = new WebSocket(address);
    ws.onopen = function () {
      lastRegions = "";
      greeted = false;
      // Hello once the page has been painted (two animation frames on), so "shown" means
      // its content is on screen, not a blank first frame.
      // The marked tiles go first: "shown" then comes with their places, so a page that
      // replaces another never shows the room's own layout in between.
      var hello = function () {
        if (!ws || ws.readyState !== 1) return;
        greeted = true;
        report();
        ws.send(JSON.stringify({ type: "hello", href: String(window.location.href), layer: layer() }));
      };
      if (window.requestAnimationFrame) {
        window.requestAnimationFrame(function () { window.requestAnimationFrame(hello); });
      } else {
        hello();
      }
    };
    ws.onmessage = function (e) {
      var m;
      try { m = JSON.parse(e.data); } catch (err) { return; }
      if (m.type === "state") {
        rc.state = m.state;
        drawChat(m.state);
        window.dispatchEvent(new CustomEvent("roomcast", { detail: m }));
      } else if (m.type === "event") {
        window.dispatchEvent(new CustomEvent("roomcast", { detail: m }));
      }
    };
    ws.onclose = function () { ws = null; setTimeout(connect, 500); };
  }
  connect();
  setInterval(function () {
    report();
    if (ws && ws.readyState === 1 && greeted) ws.send('{"type":"alive"}');
  }, 250);
  window.addEventListener("resize", report);
  if (window.MutationObserver) {
    new MutationObserver(report).observe(document.documentElement,
      { attributes: true, childList: true, subtree: true });
  }
})();
