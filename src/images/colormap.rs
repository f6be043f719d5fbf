//! Colour maps: a number in `[0, 1]` to a colour, exactly as matplotlib draws it.
//!
//! matplotlib's colour maps are tables of 256 colours: `t` picks entry
//! `min(floor(256 t), 255)`, so every value in `[i/256, (i+1)/256)` gets the same colour.
//! We do the same, so a map drawn here and one drawn by `imshow` have the same pixels
//! (colours rounded to 8 bits the way `matplotlib.colors.to_hex` rounds them).
//!
//! * [`Colormap::Viridis`]: matplotlib's default; perceptually uniform, readable in grey
//!   and by colour-blind viewers. The 256 colours are embedded below.
//! * [`Colormap::Jet`]: what the keras-vis notebooks used; eye-catching but not uniform
//!   (bright bands in the cyan and yellow read as edges that are not there).
//! * [`Colormap::Gray`]: black to white.
//!
//! No crate is used: `colorous` has viridis but evaluates a B-spline through the table and
//! truncates to `u8`, which does not give matplotlib's colours.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A colour map for heat maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Colormap {
    /// matplotlib's default colour map (dark blue, green, yellow).
    #[default]
    Viridis,
    /// The rainbow map of old MATLAB and of the keras-vis notebooks (blue, cyan, yellow, red).
    Jet,
    /// Black to white.
    Gray,
}

impl Colormap {
    /// Every colour map, for help texts and tests.
    pub const ALL: [Colormap; 3] = [Colormap::Viridis, Colormap::Jet, Colormap::Gray];

    /// The lower-case name that [`FromStr`] accepts.
    pub fn name(&self) -> &'static str {
        match self {
            Colormap::Viridis => "viridis",
            Colormap::Jet => "jet",
            Colormap::Gray => "gray",
        }
    }

    /// The colour of `t`, which is clamped to `[0, 1]`; NaN counts as 0.
    ///
    /// ```
    /// use salient::images::Colormap;
    /// assert_eq!(Colormap::Viridis.rgb(0.0), [68, 1, 84]);
    /// assert_eq!(Colormap::Gray.rgb(2.0), [255, 255, 255]);
    /// ```
    pub fn rgb(&self, t: f32) -> [u8; 3] {
        let i = lut_index(t);
        match self {
            Colormap::Viridis => {
                let c = VIRIDIS[i];
                [(c >> 16) as u8, (c >> 8) as u8, c as u8]
            }
            Colormap::Jet => {
                // matplotlib samples the segments at 256 evenly spaced points x = i / 255.
                [
                    to_u8(segment_lut_entry(JET_RED, i)),
                    to_u8(segment_lut_entry(JET_GREEN, i)),
                    to_u8(segment_lut_entry(JET_BLUE, i)),
                ]
            }
            // Entry i of a 256-entry ramp from 0 to 1 is i / 255, that is byte i.
            Colormap::Gray => [i as u8; 3],
        }
    }
}

impl fmt::Display for Colormap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Colormap {
    type Err = Error;

    /// Parses `viridis`, `jet`, `gray` or `grey`, in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "viridis" => Ok(Colormap::Viridis),
            "jet" => Ok(Colormap::Jet),
            "gray" | "grey" => Ok(Colormap::Gray),
            _ => Err(Error::invalid(
                "colormap",
                format!("unknown colour map {s:?}; expected viridis, jet or gray"),
            )),
        }
    }
}

/// matplotlib's table look-up: `floor(256 t)`, with `t = 1` on the last entry.
fn lut_index(t: f32) -> usize {
    if t.is_nan() {
        return 0;
    }
    // The cast saturates, and t is clamped first, so this is 0..=256.
    ((t.clamp(0.0, 1.0) * 256.0) as usize).min(255)
}

/// A channel value in `[0, 1]` to a byte, rounded as `to_hex` does with Python's
/// `round`: to nearest, ties to even (jet's green at entry 35 is exactly 12.5 -> 12).
fn to_u8(v: f64) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8
}

/// Entry `i` of the 256-entry table matplotlib's `LinearSegmentedColormap` builds from
/// `(x, value)` points (`x` rising from 0 to 1, no jumps: jet has none): linear
/// interpolation at `x = i / 255`.
///
/// Many of jet's entries land exactly on a half byte (e.g. green at entry 35 is 12.5), so
/// the float operations copy `_create_lookup_table` step by step (x scaled by 255, numpy's
/// `linspace`), otherwise an ulp more or less rounds to the other byte.
fn segment_lut_entry(points: &[(f64, f64)], i: usize) -> f64 {
    let (first, last) = (points[0].1, points[points.len() - 1].1);
    if i == 0 {
        return first;
    }
    if i >= 255 {
        return last;
    }
    // (N - 1) * linspace(0, 1, N)[i], with linspace's step 1 / (N - 1).
    let xi = 255.0 * (i as f64 * (1.0 / 255.0));
    for pair in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        let (x0, x1) = (x0 * 255.0, x1 * 255.0);
        // numpy's searchsorted picks the first point with x >= xi.
        if xi <= x1 {
            let distance = (xi - x0) / (x1 - x0);
            return distance * (y1 - y0) + y0;
        }
    }
    last
}

// matplotlib's `_jet_data` (matplotlib/_cm.py), as (x, value) points per channel.
const JET_RED: &[(f64, f64)] = &[
    (0.0, 0.0),
    (0.35, 0.0),
    (0.66, 1.0),
    (0.89, 1.0),
    (1.0, 0.5),
];
const JET_GREEN: &[(f64, f64)] = &[
    (0.0, 0.0),
    (0.125, 0.0),
    (0.375, 1.0),
    (0.64, 1.0),
    (0.91, 0.0),
    (1.0, 0.0),
];
const JET_BLUE: &[(f64, f64)] = &[
    (0.0, 0.5),
    (0.11, 1.0),
    (0.34, 1.0),
    (0.65, 0.0),
    (1.0, 0.0),
];

/// matplotlib's viridis as `0xRRGGBB`: `matplotlib.colormaps['viridis'].colors`, each
/// channel rounded by `to_hex` (matplotlib 3.11). The colour map data is CC0 (public
/// domain dedication by its authors, Nathaniel Smith and Stéfan van der Walt).
#[rustfmt::skip]
const VIRIDIS: [u32; 256] = [
    0x440154, 0x440256, 0x450457, 0x450559, 0x46075a, 0x46085c, 0x460a5d, 0x460b5e,
    0x470d60, 0x470e61, 0x471063, 0x471164, 0x471365, 0x481467, 0x481668, 0x481769,
    0x48186a, 0x481a6c, 0x481b6d, 0x481c6e, 0x481d6f, 0x481f70, 0x482071, 0x482173,
    0x482374, 0x482475, 0x482576, 0x482677, 0x482878, 0x482979, 0x472a7a, 0x472c7a,
    0x472d7b, 0x472e7c, 0x472f7d, 0x46307e, 0x46327e, 0x46337f, 0x463480, 0x453581,
    0x453781, 0x453882, 0x443983, 0x443a83, 0x443b84, 0x433d84, 0x433e85, 0x423f85,
    0x424086, 0x424186, 0x414287, 0x414487, 0x404588, 0x404688, 0x3f4788, 0x3f4889,
    0x3e4989, 0x3e4a89, 0x3e4c8a, 0x3d4d8a, 0x3d4e8a, 0x3c4f8a, 0x3c508b, 0x3b518b,
    0x3b528b, 0x3a538b, 0x3a548c, 0x39558c, 0x39568c, 0x38588c, 0x38598c, 0x375a8c,
    0x375b8d, 0x365c8d, 0x365d8d, 0x355e8d, 0x355f8d, 0x34608d, 0x34618d, 0x33628d,
    0x33638d, 0x32648e, 0x32658e, 0x31668e, 0x31678e, 0x31688e, 0x30698e, 0x306a8e,
    0x2f6b8e, 0x2f6c8e, 0x2e6d8e, 0x2e6e8e, 0x2e6f8e, 0x2d708e, 0x2d718e, 0x2c718e,
    0x2c728e, 0x2c738e, 0x2b748e, 0x2b758e, 0x2a768e, 0x2a778e, 0x2a788e, 0x29798e,
    0x297a8e, 0x297b8e, 0x287c8e, 0x287d8e, 0x277e8e, 0x277f8e, 0x27808e, 0x26818e,
    0x26828e, 0x26828e, 0x25838e, 0x25848e, 0x25858e, 0x24868e, 0x24878e, 0x23888e,
    0x23898e, 0x238a8d, 0x228b8d, 0x228c8d, 0x228d8d, 0x218e8d, 0x218f8d, 0x21908d,
    0x21918c, 0x20928c, 0x20928c, 0x20938c, 0x1f948c, 0x1f958b, 0x1f968b, 0x1f978b,
    0x1f988b, 0x1f998a, 0x1f9a8a, 0x1e9b8a, 0x1e9c89, 0x1e9d89, 0x1f9e89, 0x1f9f88,
    0x1fa088, 0x1fa188, 0x1fa187, 0x1fa287, 0x20a386, 0x20a486, 0x21a585, 0x21a685,
    0x22a785, 0x22a884, 0x23a983, 0x24aa83, 0x25ab82, 0x25ac82, 0x26ad81, 0x27ad81,
    0x28ae80, 0x29af7f, 0x2ab07f, 0x2cb17e, 0x2db27d, 0x2eb37c, 0x2fb47c, 0x31b57b,
    0x32b67a, 0x34b679, 0x35b779, 0x37b878, 0x38b977, 0x3aba76, 0x3bbb75, 0x3dbc74,
    0x3fbc73, 0x40bd72, 0x42be71, 0x44bf70, 0x46c06f, 0x48c16e, 0x4ac16d, 0x4cc26c,
    0x4ec36b, 0x50c46a, 0x52c569, 0x54c568, 0x56c667, 0x58c765, 0x5ac864, 0x5cc863,
    0x5ec962, 0x60ca60, 0x63cb5f, 0x65cb5e, 0x67cc5c, 0x69cd5b, 0x6ccd5a, 0x6ece58,
    0x70cf57, 0x73d056, 0x75d054, 0x77d153, 0x7ad151, 0x7cd250, 0x7fd34e, 0x81d34d,
    0x84d44b, 0x86d549, 0x89d548, 0x8bd646, 0x8ed645, 0x90d743, 0x93d741, 0x95d840,
    0x98d83e, 0x9bd93c, 0x9dd93b, 0xa0da39, 0xa2da37, 0xa5db36, 0xa8db34, 0xaadc32,
    0xaddc30, 0xb0dd2f, 0xb2dd2d, 0xb5de2b, 0xb8de29, 0xbade28, 0xbddf26, 0xc0df25,
    0xc2df23, 0xc5e021, 0xc8e020, 0xcae11f, 0xcde11d, 0xd0e11c, 0xd2e21b, 0xd5e21a,
    0xd8e219, 0xdae319, 0xdde318, 0xdfe318, 0xe2e418, 0xe5e419, 0xe7e419, 0xeae51a,
    0xece51b, 0xefe51c, 0xf1e51d, 0xf4e61e, 0xf6e620, 0xf8e621, 0xfbe723, 0xfde725,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values from matplotlib 3.11: `to_hex(matplotlib.colormaps[name](t))`.
    /// (All 256 entries of the three maps, and t = k / 1000, were also compared once
    /// against matplotlib; they all agree.)
    #[test]
    fn colours_match_matplotlib() {
        let cases: &[(Colormap, f32, [u8; 3])] = &[
            (Colormap::Viridis, 0.0, [0x44, 0x01, 0x54]),
            (Colormap::Viridis, 0.25, [0x3b, 0x52, 0x8b]),
            (Colormap::Viridis, 0.5, [0x21, 0x91, 0x8c]),
            (Colormap::Viridis, 0.75, [0x5e, 0xc9, 0x62]),
            (Colormap::Viridis, 1.0, [0xfd, 0xe7, 0x25]),
            (Colormap::Jet, 0.0, [0x00, 0x00, 0x80]),
            (Colormap::Jet, 0.1, [0x00, 0x00, 0xf1]),
            (Colormap::Jet, 0.125, [0x00, 0x00, 0xff]),
            // Entry 35: green is exactly 12.5 / 255, a tie that Python's round sends to 12.
            (Colormap::Jet, 35.5 / 256.0, [0x00, 0x0c, 0xff]),
            (Colormap::Jet, 0.25, [0x00, 0x80, 0xff]),
            (Colormap::Jet, 0.35, [0x00, 0xe4, 0xf8]),
            (Colormap::Jet, 0.5, [0x7d, 0xff, 0x7a]),
            (Colormap::Jet, 0.66, [0xfe, 0xed, 0x00]),
            (Colormap::Jet, 0.75, [0xff, 0x94, 0x00]),
            (Colormap::Jet, 0.9, [0xf1, 0x08, 0x00]),
            (Colormap::Jet, 1.0, [0x80, 0x00, 0x00]),
            (Colormap::Gray, 0.0, [0; 3]),
            (Colormap::Gray, 0.1, [0x19; 3]),
            (Colormap::Gray, 0.5, [0x80; 3]),
            (Colormap::Gray, 0.7, [0xb3; 3]),
            (Colormap::Gray, 1.0, [0xff; 3]),
        ];
        for &(map, t, want) in cases {
            assert_eq!(map.rgb(t), want, "{map}({t})");
        }
    }

    #[test]
    fn endpoints_are_the_brief_values() {
        assert_eq!(Colormap::Viridis.rgb(0.0), [68, 1, 84]);
        assert_eq!(Colormap::Viridis.rgb(1.0), [253, 231, 37]);
        // 0.5 * 255 = 127.5 rounds to 128 (matplotlib's bytes=True truncates to 127).
        assert_eq!(Colormap::Jet.rgb(0.0), [0, 0, 128]);
        assert_eq!(Colormap::Jet.rgb(1.0), [128, 0, 0]);
    }

    #[test]
    fn out_of_range_is_clamped_and_nan_is_zero() {
        for map in Colormap::ALL {
            assert_eq!(map.rgb(-3.0), map.rgb(0.0));
            assert_eq!(map.rgb(f32::NEG_INFINITY), map.rgb(0.0));
            assert_eq!(map.rgb(7.0), map.rgb(1.0));
            assert_eq!(map.rgb(f32::INFINITY), map.rgb(1.0));
            assert_eq!(map.rgb(f32::NAN), map.rgb(0.0));
        }
    }

    #[test]
    fn values_in_one_256th_share_a_colour() {
        // 0.5 and 0.5 + 1/512 both pick entry 128; 0.5 - 1e-3 picks entry 127.
        assert_eq!(
            Colormap::Gray.rgb(0.5),
            Colormap::Gray.rgb(0.5 + 1.0 / 512.0)
        );
        assert_eq!(Colormap::Gray.rgb(0.499), [127; 3]);
    }

    #[test]
    fn gray_is_monotone_and_viridis_gets_brighter() {
        let luma = |c: [u8; 3]| 0.299 * c[0] as f32 + 0.587 * c[1] as f32 + 0.114 * c[2] as f32;
        for i in 1..256 {
            let (a, b) = ((i - 1) as f32 / 255.0, i as f32 / 255.0);
            assert!(Colormap::Gray.rgb(a)[0] <= Colormap::Gray.rgb(b)[0]);
            assert!(luma(Colormap::Viridis.rgb(a)) <= luma(Colormap::Viridis.rgb(b)) + 1.0);
        }
    }

    #[test]
    fn names_parse_back() {
        for map in Colormap::ALL {
            assert_eq!(map.name().parse::<Colormap>().unwrap(), map);
        }
        assert_eq!("Grey".parse::<Colormap>().unwrap(), Colormap::Gray);
        let err = "rainbow".parse::<Colormap>().unwrap_err();
        assert!(err.to_string().contains("viridis, jet or gray"), "{err}");
    }
}
