//! Simulcast layer choice: which layer of each video track a subscriber gets.
//!
//! Pure functions over a snapshot, so that the policy is easy to test:
//! 1. each track's *wanted* layer is the smallest whose resolution covers the subscriber's view of
//!    it (the tile size the SDK reports, in device pixels), the highest when no view is known,
//!    none when the tile is not visible (paused);
//! 2. while the wanted layers together need more than the subscriber's bandwidth budget, the
//!    track whose layer costs the most steps down one layer (never below the lowest: a track
//!    that is visible always gets something);
//! 3. a layer that is not arriving (the publisher dropped it, e.g. for its own bandwidth) is never
//!    chosen.

/// One layer of a published video track, as measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerInfo {
    /// Frame width, when known (parsed from keyframes), else 0.
    pub width: u32,
    /// Frame height, when known, else 0.
    pub height: u32,
    /// Measured bitrate, bits per second.
    pub bitrate: u64,
    /// Packets arrived recently.
    pub active: bool,
}

/// One subscription to choose for.
#[derive(Debug, Clone, PartialEq)]
pub struct Want {
    /// The track's layers, lowest quality first.
    pub layers: Vec<LayerInfo>,
    /// The tile: `Some((0, 0))` = not visible, `None` = unknown (take the best).
    pub view: Option<(u32, u32)>,
}

/// Width assumed for the top layer of a track whose sizes are unknown (each lower layer half).
const ASSUMED_TOP_WIDTH: u32 = 1280;

/// The layer (index into `layers`) that covers `view`, ignoring bandwidth.
pub fn wanted(w: &Want) -> Option<usize> {
    let active: Vec<usize> = (0..w.layers.len())
        .filter(|&i| w.layers[i].active)
        .collect();
    let top = *active.last()?;
    let Some((vw, vh)) = w.view else {
        return Some(top);
    };
    if vw == 0 || vh == 0 {
        return None;
    }
    let n = w.layers.len();
    for &i in &active {
        let l = &w.layers[i];
        let (lw, lh) = if l.width > 0 {
            (l.width, l.height)
        } else {
            // Unknown size: assume halving per step from the top.
            let shift = u32::try_from(n - 1 - i).unwrap_or(31).min(31);
            (ASSUMED_TOP_WIDTH >> shift, 0)
        };
        // A layer covers the tile when it is at least ~90 % of its size in both directions.
        if lw.saturating_mul(10) >= vw.saturating_mul(9)
            && (lh == 0 || lh.saturating_mul(10) >= vh.saturating_mul(9))
        {
            return Some(i);
        }
    }
    Some(top)
}

/// The next lower active layer below `i`, if any.
fn lower(w: &Want, i: usize) -> Option<usize> {
    (0..i).rev().find(|&j| w.layers[j].active)
}

/// Chooses a layer per subscription within `budget` bits per second (`None`: no limit known).
pub fn choose(wants: &[Want], budget: Option<u64>) -> Vec<Option<usize>> {
    let mut chosen: Vec<Option<usize>> = wants.iter().map(wanted).collect();
    let Some(budget) = budget else {
        return chosen;
    };
    let cost = |c: &[Option<usize>]| -> u64 {
        c.iter()
            .zip(wants)
            .filter_map(|(c, w)| c.map(|i| w.layers[i].bitrate))
            .sum()
    };
    while cost(&chosen) > budget {
        // The most expensive track that can still step down.
        let mut best: Option<(usize, u64)> = None;
        for (t, c) in chosen.iter().enumerate() {
            let Some(i) = *c else { continue };
            if lower(&wants[t], i).is_none() {
                continue;
            }
            let b = wants[t].layers[i].bitrate;
            if best.is_none_or(|(_, bb)| b > bb) {
                best = Some((t, b));
            }
        }
        let Some((t, _)) = best else { break };
        chosen[t] = chosen[t].and_then(|i| lower(&wants[t], i));
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(width: u32, kbps: u64) -> LayerInfo {
        LayerInfo {
            width,
            height: width * 3 / 4,
            bitrate: kbps * 1000,
            active: true,
        }
    }

    fn three() -> Vec<LayerInfo> {
        vec![layer(160, 100), layer(320, 300), layer(640, 1000)]
    }

    #[test]
    fn view_picks_smallest_covering_layer() {
        let w = |view| Want {
            layers: three(),
            view,
        };
        assert_eq!(wanted(&w(None)), Some(2));
        assert_eq!(wanted(&w(Some((0, 0)))), None, "not visible: paused");
        assert_eq!(wanted(&w(Some((150, 110)))), Some(0));
        assert_eq!(
            wanted(&w(Some((170, 120)))),
            Some(0),
            "90 % is close enough"
        );
        assert_eq!(wanted(&w(Some((300, 225)))), Some(1));
        assert_eq!(
            wanted(&w(Some((1920, 1080)))),
            Some(2),
            "bigger than all: the top"
        );
    }

    #[test]
    fn inactive_layers_are_skipped() {
        let mut layers = three();
        layers[2].active = false;
        let w = Want { layers, view: None };
        assert_eq!(wanted(&w), Some(1));
        let none = Want {
            layers: vec![LayerInfo {
                active: false,
                ..layer(160, 1)
            }],
            view: None,
        };
        assert_eq!(wanted(&none), None);
    }

    #[test]
    fn unknown_sizes_assume_halving() {
        let mut layers = three();
        for l in &mut layers {
            l.width = 0;
            l.height = 0;
        }
        let w = Want {
            layers,
            view: Some((300, 200)),
        };
        // Assumed 320 / 640 / 1280.
        assert_eq!(wanted(&w), Some(0));
    }

    #[test]
    fn budget_steps_down_the_most_expensive_first() {
        let wants = vec![
            Want {
                layers: three(),
                view: None,
            },
            Want {
                layers: three(),
                view: None,
            },
        ];
        assert_eq!(choose(&wants, None), vec![Some(2), Some(2)]);
        assert_eq!(choose(&wants, Some(2_000_000)), vec![Some(2), Some(2)]);
        assert_eq!(choose(&wants, Some(1_400_000)), vec![Some(1), Some(2)]);
        assert_eq!(choose(&wants, Some(700_000)), vec![Some(1), Some(1)]);
        // Never below the lowest layer: visible tracks always get something.
        assert_eq!(choose(&wants, Some(1_000)), vec![Some(0), Some(0)]);
    }
}
