//! HLS media playlists: the live one (a sliding window of the newest segments) and the VOD
//! one written when the output ends (every segment, `#EXT-X-ENDLIST`).

use std::fmt::Write;

/// One cut segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Media sequence number (from 1).
    pub sequence: u32,
    /// File name, relative to the playlist.
    pub uri: String,
    /// Duration in seconds.
    pub duration: f64,
}

/// The segments of one output.
#[derive(Debug, Clone)]
pub struct Playlist {
    /// The initialization segment's file name.
    pub map: String,
    /// The configured segment length (seconds).
    pub target: f64,
    /// Segments listed while live.
    pub window: usize,
    /// Every segment cut so far.
    pub entries: Vec<Entry>,
}

impl Playlist {
    /// An empty playlist.
    pub fn new(map: String, target: f64, window: usize) -> Playlist {
        Playlist {
            map,
            target,
            window: window.max(1),
            entries: Vec::new(),
        }
    }

    /// `#EXT-X-TARGETDURATION`: no segment may be longer (rounded) than this.
    fn target_duration(&self) -> u64 {
        let longest = self
            .entries
            .iter()
            .map(|e| e.duration)
            .fold(self.target, f64::max);
        longest.round().max(1.0) as u64
    }

    fn render(&self, listed: &[Entry], vod: bool) -> String {
        let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:7\n");
        let _ = writeln!(s, "#EXT-X-TARGETDURATION:{}", self.target_duration());
        let first = listed.first().map_or(1, |e| e.sequence);
        let _ = writeln!(s, "#EXT-X-MEDIA-SEQUENCE:{first}");
        if vod {
            s.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
        }
        s.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        let _ = writeln!(s, "#EXT-X-MAP:URI=\"{}\"", self.map);
        for e in listed {
            let _ = writeln!(s, "#EXTINF:{:.3},\n{}", e.duration, e.uri);
        }
        if vod {
            s.push_str("#EXT-X-ENDLIST\n");
        }
        s
    }

    /// The live playlist: the newest `window` segments.
    pub fn live(&self) -> String {
        let from = self.entries.len().saturating_sub(self.window);
        self.render(&self.entries[from..], false)
    }

    /// The playlist of the ended output: every segment.
    pub fn vod(&self) -> String {
        self.render(&self.entries, true)
    }

    /// Seconds of media in every segment cut so far.
    pub fn duration(&self) -> f64 {
        self.entries.iter().map(|e| e.duration).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn playlist(n: u32) -> Playlist {
        let mut p = Playlist::new("r_1_1_init.m4s".into(), 4.0, 3);
        for i in 1..=n {
            p.entries.push(Entry {
                sequence: i,
                uri: format!("r_1_1_{i:05}.m4s"),
                duration: if i == 2 { 4.4 } else { 4.0 },
            });
        }
        p
    }

    #[test]
    fn live_lists_the_window_and_vod_lists_everything() {
        let p = playlist(5);
        let live = p.live();
        assert!(live.contains("#EXT-X-MEDIA-SEQUENCE:3\n"));
        assert!(!live.contains("r_1_1_00002.m4s"));
        assert!(live.contains("r_1_1_00005.m4s"));
        assert!(!live.contains("ENDLIST"));
        assert!(live.contains("#EXT-X-MAP:URI=\"r_1_1_init.m4s\"\n"));
        let vod = p.vod();
        assert!(vod.contains("#EXT-X-MEDIA-SEQUENCE:1\n"));
        assert!(vod.contains("#EXTINF:4.400,\nr_1_1_00002.m4s\n"));
        assert!(vod.ends_with("#EXT-X-ENDLIST\n"));
        assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
        assert!((p.duration() - 20.4).abs() < 1e-9);
    }

    #[test]
    fn target_duration_covers_the_longest_segment() {
        let mut p = playlist(2);
        assert!(p.live().contains("#EXT-X-TARGETDURATION:4\n"));
        p.entries[1].duration = 6.2;
        assert!(p.live().contains("#EXT-X-TARGETDURATION:6\n"));
    }
}
