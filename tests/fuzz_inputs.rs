//! The fuzz target's checks without libFuzzer: every seed, every kept regression
//! (`fuzz/regressions`, committed), every input a local libFuzzer run kept in its corpus, plus deterministic mutations of the seeds (bytes flipped, cut, duplicated,
//! spliced), go through every parser; none may panic. `make fuzz` runs the real fuzzer.

include!("../fuzz/exercise.rs");

/// A small deterministic generator (xorshift64*), so a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn inputs(dir: &str) -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    out.sort();
    out
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = rng.next() as u8;
            }
            1 if !d.is_empty() => d.truncate(rng.below(d.len())),
            2 if !d.is_empty() => {
                let (a, b) = (rng.below(d.len()), rng.below(d.len()));
                let (a, b) = (a.min(b), a.max(b));
                let piece = d[a..b].to_vec();
                let at = rng.below(d.len());
                d.splice(at..at, piece);
            }
            3 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(other.len());
                d.extend_from_slice(&other[cut..]);
            }
            _ => {
                let i = rng.below(d.len() + 1);
                let tokens: [&[u8]; 8] = [
                    b"{", b"}", b"[", b"\"", b",", b"null", b"-1e400", b"\\u0000",
                ];
                d.splice(i..i, tokens[rng.below(tokens.len())].iter().copied());
            }
        }
    }
    d
}

#[test]
fn seeds_corpus_and_mutations_never_panic() {
    let seeds = inputs("fuzz/seeds");
    assert!(seeds.len() >= 6, "seeds missing");
    // The kept regressions (committed: hostile inputs found by hand and by the fuzzer) and
    // whatever a local `make fuzz` added to its own corpus.
    let regressions = inputs("fuzz/regressions");
    assert!(regressions.len() >= 30, "{} regressions", regressions.len());
    for input in seeds
        .iter()
        .chain(regressions.iter())
        .chain(inputs("fuzz/corpus/api_input").iter())
    {
        exercise(input);
    }
    let mut rng = Rng(0x005e_ed0f_f022);
    for _ in 0..20_000 {
        exercise(&mutate(&mut rng, &seeds));
    }
}

#[test]
fn kept_hostile_requests_are_refused() {
    use roomcast::api::input;
    use roomcast::codes::Code;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let refused = |name: &str| {
        let data = std::fs::read(root.join(name)).unwrap();
        input::json_object(&data, Code::RecordParamsMissing)
            .and_then(|b| input::requester(&b, Code::RecordParamsMissing))
            .is_err()
    };
    for name in [
        "dup-role.json",
        "dup-top.json",
        "client-id-newline.json",
        "client-id-bidi.json",
        "client-id-long.json",
        "client-id-number.json",
        "client-id-empty.json",
        "requested-by-string.json",
        "invalid-utf8.json",
    ] {
        assert!(refused(name), "{name} accepted");
    }
    for name in ["dup-nested-settings.json", "dup-in-array.json"] {
        let data = std::fs::read(root.join(name)).unwrap();
        assert!(
            input::parse_room_body(&data).is_err() && input::parse_event_body(&data).is_err(),
            "{name} accepted"
        );
    }
}
