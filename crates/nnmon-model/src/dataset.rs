//! The diabetes data set, as scikit-learn 1.9 loads it (`load_diabetes()`, scaled features).
//!
//! nnmon carries its own copy of all 442 rows: `linfa-datasets` 0.8.1 loses the first sample
//! (its loader skips a header line its files do not have), and its files hold the older
//! pre-scaled values, which differ from scikit-learn's current ones by up to 1.2e-5 and move
//! the OLS coefficients in the fourth digit away from the seed's model.

use nnmon_proto::FEATURE_COUNT;
use std::sync::OnceLock;

const DIABETES_CSV: &str = include_str!("../data/diabetes.csv");

/// Number of samples in the diabetes data set.
pub const DIABETES_ROWS: usize = 442;

/// One row: the disease progression a year later, and the ten baseline features.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub target: f64,
    pub features: [f64; FEATURE_COUNT],
}

/// Why a data set file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct DatasetError {
    pub line: usize,
    pub problem: String,
}

/// Parses `target,f1..f10` lines after a header line.
pub fn parse(csv: &str) -> Result<Vec<Sample>, DatasetError> {
    csv.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let error = |problem: String| DatasetError {
                line: index + 1,
                problem,
            };
            let values = line
                .split(',')
                .map(|field| field.trim().parse::<f64>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error(e.to_string()))?;
            let (&target, features) = values
                .split_first()
                .ok_or_else(|| error("empty line".into()))?;
            let features = features.try_into().map_err(|_| {
                error(format!(
                    "expected {} values, found {}",
                    FEATURE_COUNT + 1,
                    values.len()
                ))
            })?;
            Ok(Sample { target, features })
        })
        .collect()
}

/// The 442 samples, parsed once from the embedded CSV.
pub fn diabetes() -> &'static [Sample] {
    static SAMPLES: OnceLock<Vec<Sample>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        // The file is part of the binary and checked by the tests below.
        parse(DIABETES_CSV).expect("the embedded diabetes CSV is well-formed")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_all_442_rows_including_the_first() {
        let samples = diabetes();
        assert_eq!(samples.len(), DIABETES_ROWS);
        assert_eq!(samples[0].target, 151.0);
        let first = [0.0380759064334241, 0.0506801187398187, 0.0616962065186885];
        for (got, want) in samples[0].features.iter().zip(first) {
            assert!((got - want).abs() < 1e-14, "{got} vs {want}");
        }
        assert_eq!(samples[441].target, 57.0);
    }

    #[test]
    fn reports_the_line_of_a_bad_row() {
        let err = parse("h\n1,2,3\n").expect_err("too few values");
        assert_eq!(err.line, 2);
        let err = parse("h\n1,2,3,4,5,6,7,8,9,10,x\n").expect_err("not a number");
        assert_eq!(err.line, 2);
    }
}
