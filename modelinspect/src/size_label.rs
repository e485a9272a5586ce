//! "7B", "135M": a model's size as people say it, from its parameter count.

/// The label for `parameters`, rounded to a whole or one decimal number
/// of thousands, millions, billions or trillions.
pub fn from_parameters(parameters: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1_000_000_000_000, "T"),
        (1_000_000_000, "B"),
        (1_000_000, "M"),
        (1_000, "K"),
    ];
    for (scale, unit) in UNITS {
        if parameters >= scale {
            let v = parameters as f64 / scale as f64;
            return if v >= 10.0 {
                format!("{v:.0}{unit}")
            } else {
                let s = format!("{v:.1}");
                format!("{}{unit}", s.trim_end_matches(".0"))
            };
        }
    }
    parameters.to_string()
}

#[cfg(test)]
mod tests {
    use super::from_parameters;

    #[test]
    fn labels_round_like_model_cards() {
        assert_eq!(from_parameters(6_738_415_616), "6.7B");
        assert_eq!(from_parameters(8_030_261_248), "8B");
        assert_eq!(from_parameters(124_439_808), "124M");
        assert_eq!(from_parameters(1_500), "1.5K");
        assert_eq!(from_parameters(70_553_706_496), "71B");
        assert_eq!(from_parameters(12), "12");
    }
}
