use super::*;
use crate::codes::Code;

const HD: Canvas = Canvas {
    width: 1280,
    height: 720,
};

fn tiles(n: usize) -> Vec<Tile> {
    (0..n)
        .map(|i| Tile::new(&format!("p{i}"), &format!("P{i}"), i as u64))
        .collect()
}

fn rect_of(slots: &[Slot], participant: &str, screen: bool) -> Option<Rect> {
    slots.iter().find_map(|s| match &s.content {
        SlotContent::Tile { id, .. } if id.participant == participant && id.screen == screen => {
            Some(s.rect)
        }
        _ => None,
    })
}

fn r(x: i32, y: i32, w: u32, h: u32) -> Rect {
    Rect { x, y, w, h }
}

#[test]
fn builtins_parse_and_validate() {
    for name in BUILTINS {
        let def = builtin(name).unwrap_or_else(|| panic!("built-in {name} does not parse"));
        def.validate().unwrap();
        assert_eq!(&def.name, name);
        Layout::resolve(name).unwrap();
    }
}

#[test]
fn grid_one_to_four() {
    let l = Layout::resolve("grid").unwrap();
    let s = l.place(HD, &tiles(1));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].rect, r(0, 0, 1280, 720));
    assert_eq!(s[0].label.as_deref(), Some("P0"));

    let s = l.place(HD, &tiles(2));
    assert_eq!(rect_of(&s, "p0", false), Some(r(0, 0, 640, 720)));
    assert_eq!(rect_of(&s, "p1", false), Some(r(640, 0, 640, 720)));

    // Three: 2x2 with the last row centred.
    let s = l.place(HD, &tiles(3));
    assert_eq!(rect_of(&s, "p0", false), Some(r(0, 0, 640, 360)));
    assert_eq!(rect_of(&s, "p1", false), Some(r(640, 0, 640, 360)));
    assert_eq!(rect_of(&s, "p2", false), Some(r(320, 360, 640, 360)));

    let s = l.place(HD, &tiles(4));
    assert_eq!(rect_of(&s, "p3", false), Some(r(640, 360, 640, 360)));
}

#[test]
fn grid_nine_and_overflow() {
    let l = Layout::resolve("grid").unwrap();
    let s = l.place(HD, &tiles(9));
    assert_eq!(s.len(), 9);
    // 3x3: widths alternate because 1280/3 is not even.
    assert_eq!(rect_of(&s, "p0", false).unwrap().x, 0);
    assert_eq!(rect_of(&s, "p4", false).unwrap().y, 240);
    assert_eq!(rect_of(&s, "p8", false).unwrap().y, 480);

    let s = l.place(HD, &tiles(12));
    assert_eq!(s.len(), 9);
    let shown = s
        .iter()
        .filter(|s| matches!(s.content, SlotContent::Tile { .. }))
        .count();
    assert_eq!(shown, 8);
    assert_eq!(s.last().unwrap().content, SlotContent::Overflow(4));

    let l = Layout::resolve("grid").unwrap().with_max_tiles(4).unwrap();
    let s = l.place(HD, &tiles(6));
    assert_eq!(s.len(), 4);
    assert_eq!(s[3].content, SlotContent::Overflow(3));
    assert_eq!(s[3].rect, r(640, 360, 640, 360));
    assert!(Layout::resolve("grid").unwrap().with_max_tiles(0).is_err());
}

#[test]
fn grid_portrait_stacks() {
    let l = Layout::resolve("grid").unwrap();
    let portrait = Canvas {
        width: 720,
        height: 1280,
    };
    let s = l.place(portrait, &tiles(2));
    assert_eq!(rect_of(&s, "p0", false), Some(r(0, 0, 720, 640)));
    assert_eq!(rect_of(&s, "p1", false), Some(r(0, 640, 720, 640)));
}

#[test]
fn order_follows_active_talker_rules() {
    let mut t = tiles(6);
    t[5].spotlighted = true;
    t[3].talker_rank = Some(1);
    t[4].talker_rank = Some(0);
    t[1].pinned = true;
    let order: Vec<_> = ordered(&t)
        .iter()
        .map(|t| t.id.participant.clone())
        .collect();
    assert_eq!(order, ["p5", "p4", "p3", "p1", "p0", "p2"]);

    // Grid fills cells in that order.
    let s = Layout::resolve("grid").unwrap().place(HD, &t[..4]);
    assert_eq!(rect_of(&s, "p3", false), Some(r(0, 0, 640, 360)));
    assert_eq!(rect_of(&s, "p1", false), Some(r(640, 0, 640, 360)));
}

#[test]
fn paused_hidden_and_muted_video_placeholder() {
    let mut t = tiles(3);
    t[1].paused = true;
    t[2].video_muted = true;
    let s = Layout::resolve("grid").unwrap().place(HD, &t);
    assert_eq!(s.len(), 2);
    assert!(rect_of(&s, "p1", false).is_none());
    let p2 = s
        .iter()
        .find(|s| rect_of(std::slice::from_ref(s), "p2", false).is_some())
        .unwrap();
    assert_eq!(
        p2.content,
        SlotContent::Tile {
            id: TileId::camera("p2"),
            show_video: false,
            name: "P2".into()
        }
    );
}

#[test]
fn speaker_layout() {
    let mut t = tiles(4);
    t[2].talker_rank = Some(0);
    let s = Layout::resolve("speaker").unwrap().place(HD, &t);
    assert_eq!(rect_of(&s, "p2", false), Some(r(0, 0, 1280, 576)));
    // Filmstrip of three 16:9 cells, 144 px high, centred.
    let film: Vec<Rect> = ["p0", "p1", "p3"]
        .iter()
        .map(|p| rect_of(&s, p, false).unwrap())
        .collect();
    assert!(film.iter().all(|f| f.y == 576 && f.h == 144 && f.w == 256));
    assert_eq!(film[0].x, 256);
    assert!(film[0].x < film[1].x && film[1].x < film[2].x);
}

#[test]
fn grid_switches_to_presentation_while_screen_shared() {
    let mut t = tiles(3);
    let mut share = Tile::new("p1", "P1", 1);
    share.id = TileId::screen("p1");
    t.push(share);
    let l = Layout::resolve("grid").unwrap();
    assert_eq!(l.active_def(&t).name, "presentation");
    let s = l.place(HD, &t);
    assert_eq!(rect_of(&s, "p1", true), Some(r(0, 0, 1024, 720)));
    let col = rect_of(&s, "p0", false).unwrap();
    assert_eq!((col.x, col.w, col.h), (1024, 256, 144));
    let sl = s
        .iter()
        .find(|s| rect_of(std::slice::from_ref(s), "p1", true).is_some())
        .unwrap();
    assert_eq!(sl.fit, Fit::Letterbox);
    assert_eq!(sl.label.as_deref(), Some("P1 (screen)"));
    // Speaker switches too; single does not.
    assert_eq!(
        Layout::resolve("speaker").unwrap().active_def(&t).name,
        "presentation"
    );
    assert_eq!(
        Layout::resolve("single").unwrap().active_def(&t).name,
        "single"
    );
}

#[test]
fn presentation_without_share_falls_back_to_speaker() {
    let s = Layout::resolve("presentation")
        .unwrap()
        .place(HD, &tiles(2));
    assert_eq!(rect_of(&s, "p0", false), Some(r(0, 0, 1024, 720)));
    assert!(rect_of(&s, "p1", false).is_some());
}

#[test]
fn single_shows_first_in_order() {
    let mut t = tiles(3);
    t[2].spotlighted = true;
    let s = Layout::resolve("single").unwrap().place(HD, &t);
    assert_eq!(s.len(), 1);
    assert_eq!(rect_of(&s, "p2", false), Some(r(0, 0, 1280, 720)));
}

#[test]
fn custom_json_file_and_participant_region() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/layouts/picture-in-picture.json"
    );
    let l = Layout::resolve(path).unwrap();
    assert_eq!(l.def().label.position, LabelPosition::TopLeft);
    let s = l.place(HD, &tiles(2));
    // No screen: the speaker fills the background region and the next in order... is not shown,
    // because the small region also wants a speaker and p1 is next.
    assert_eq!(rect_of(&s, "p0", false), Some(r(0, 0, 1280, 720)));
    let pip = rect_of(&s, "p1", false).unwrap();
    assert_eq!((pip.x, pip.y), (960, 518));
    assert!(s.windows(2).all(|w| w[0].z <= w[1].z));

    let text = r#"
name = "host-left"
[[region]]
x = 0.0
y = 0.0
w = 0.5
h = 1.0
fill = "participant:p1"
[[region]]
x = 0.5
y = 0.0
w = 0.5
h = 1.0
fill = "others"
"#;
    let l = Layout::from_def(LayoutDef::from_toml(text).unwrap()).unwrap();
    let s = l.place(HD, &tiles(3));
    assert_eq!(rect_of(&s, "p1", false), Some(r(0, 0, 640, 720)));
    assert_eq!(rect_of(&s, "p0", false).unwrap().x, 640);
}

fn err_of(text: &str) -> LayoutError {
    match LayoutDef::from_toml(text) {
        Err(e) => e,
        Ok(def) => Layout::from_def(def).expect_err("layout should be rejected"),
    }
}

#[test]
fn custom_errors_name_the_field() {
    let e = Layout::resolve("  ").unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::LayoutMissing, "layout"));
    let e = Layout::resolve("mosaic").unwrap_err();
    assert_eq!(e.code, Code::UnsupportedLayout);
    assert!(e.message.contains("grid"));

    let base = "name = \"x\"\n[[region]]\nx = 0.0\ny = 0.0\nw = 1.0\nh = 1.0\n";
    let e = err_of(&format!("{base}fill = \"everyone\"\n"));
    assert_eq!(e.code, Code::UnsupportedLayout);
    assert!(e.message.contains("unknown fill"), "{e}");

    let e = err_of(&format!("{base}fill = \"others\"\ncolour = 1\n"));
    assert_eq!(e.field, "colour");

    let e =
        err_of("name = \"x\"\n[[region]]\nx = 0.6\ny = 0.0\nw = 0.5\nh = 1.0\nfill = \"others\"\n");
    assert_eq!(e.field, "region[0].w");

    let e = err_of(
        "name = \"x\"\n[[region]]\nx = -0.1\ny = 0.0\nw = 0.5\nh = 1.0\nfill = \"others\"\n",
    );
    assert_eq!(e.field, "region[0].x");

    let e = err_of(&format!("{base}fill = \"others\"\nmax_tiles = 0\n"));
    assert_eq!(e.field, "region[0].max_tiles");

    let e = err_of("name = \"x\"\n");
    assert_eq!(e.field, "region");

    let e = err_of(&format!("background = \"red\"\n{base}fill = \"others\"\n"));
    assert_eq!(e.field, "background");

    let e = err_of(&format!(
        "on_screen_share = \"mine\"\n{base}fill = \"others\"\n"
    ));
    assert_eq!(e.field, "on_screen_share");

    let e = err_of(&format!("{base}fill = \"others\"\n[label]\nsize = 0.9\n"));
    assert_eq!(e.field, "label.size");

    let e = err_of(&format!("{base}fill = \"others\"\nx_extra = 1\n"));
    assert_eq!(e.field, "x_extra");

    let e = LayoutDef::from_json("{\"name\": 3}").unwrap_err();
    assert_eq!(e.code, Code::UnsupportedLayout);

    let dir = std::env::temp_dir().join(format!("roomcast-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.yaml");
    std::fs::write(&p, "name: x").unwrap();
    let e = Layout::resolve(p.to_str().unwrap()).unwrap_err();
    assert!(e.message.contains(".toml or .json"));
    let p = dir.join("img.toml");
    std::fs::write(
        &p,
        format!("background_image = \"missing.png\"\n{base}fill = \"others\"\n"),
    )
    .unwrap();
    let e = Layout::resolve(p.to_str().unwrap()).unwrap_err();
    assert_eq!(e.field, "background_image");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_slot_is_even_and_on_canvas() {
    for name in BUILTINS {
        let l = Layout::resolve(name).unwrap();
        for n in 1..=16 {
            for canvas in [
                HD,
                Canvas {
                    width: 1920,
                    height: 1080,
                },
                Canvas {
                    width: 720,
                    height: 1280,
                },
            ] {
                let mut t = tiles(n);
                if n % 3 == 0 {
                    let mut s = Tile::new("p0", "P0", 0);
                    s.id = TileId::screen("p0");
                    t.push(s);
                }
                for s in l.place(canvas, &t) {
                    let rc = s.rect;
                    assert!(
                        rc.x % 2 == 0 && rc.y % 2 == 0 && rc.w % 2 == 0 && rc.h % 2 == 0,
                        "{rc:?}"
                    );
                    assert!(rc.x >= 0 && rc.y >= 0);
                    assert!(
                        rc.x as u32 + rc.w <= canvas.width && rc.y as u32 + rc.h <= canvas.height
                    );
                }
            }
        }
    }
}

#[test]
fn portrait_canvases_use_portrait_regions() {
    let portrait = Canvas {
        width: 720,
        height: 1280,
    };
    let mut t = tiles(2);
    let mut share = Tile::new("p0", "P0", 0);
    share.id = TileId::screen("p0");
    t.push(share);
    let s = Layout::resolve("grid").unwrap().place(portrait, &t);
    assert_eq!(rect_of(&s, "p0", true), Some(r(0, 0, 720, 576)));
    assert_eq!(rect_of(&s, "p0", false), Some(r(0, 576, 720, 352)));
    assert_eq!(rect_of(&s, "p1", false), Some(r(0, 928, 720, 352)));
    // Landscape is unchanged.
    let s = Layout::resolve("grid").unwrap().place(HD, &t);
    assert_eq!(rect_of(&s, "p0", true), Some(r(0, 0, 1024, 720)));
    // Portrait regions are validated like the others.
    let e = err_of(
        "name = \"x\"\n[[region]]\nx = 0.0\ny = 0.0\nw = 1.0\nh = 1.0\nfill = \"others\"\n\
         [[portrait_region]]\nx = 0.0\ny = 0.5\nw = 1.0\nh = 0.6\nfill = \"others\"\n",
    );
    assert_eq!(e.field, "portrait_region[0].h");
}
