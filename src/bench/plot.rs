//! `--plot`: latency by percentile as an SVG chart, one line per run, in
//! the style of HdrHistogram's percentile plots: the x axis stretches the
//! tail (50%, 90%, 99%, 99.9%, ... equally spaced), where servers differ.

use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use super::report::Point;

/// One run's line on the chart.
pub struct Series<'a> {
    /// The legend.
    pub label: String,
    /// Its distribution, as [`Results`](super::Results) holds it.
    pub points: &'a [Point],
}

/// How the latency axis is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scale {
    /// Logarithmic when the latencies span two decades or more (a tail a
    /// hundred times the median flattens everything else on a linear axis).
    #[default]
    Auto,
    /// Linear from 0.
    Linear,
    /// Logarithmic.
    Log,
}

/// Renders the chart as an SVG document, the latency axis scaled as asked.
pub fn svg(series: &[Series<'_>], scale: Scale) -> Result<String, String> {
    let mut svg = String::new();
    draw(&mut svg, series, scale).map_err(|e| format!("cannot draw the chart: {e}"))?;
    Ok(svg)
}

/// The log10 of the tail: 0 is the median's side, 1 is 90%, 2 is 99%.
fn tail(p: &Point) -> f64 {
    -(1.0 - (p.percentile / 100.0).min(0.99999)).log10()
}

fn draw(
    svg: &mut String,
    series: &[Series<'_>],
    scale: Scale,
) -> Result<(), Box<dyn std::error::Error>> {
    // To a whole decade of the tail (a percentile label), rounding
    // 4.9999999 (99.999% in floating point) to 5.
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(tail))
        .fold(1.0f64, f64::max);
    let x_max = (x_max - 1e-6).ceil().max(1.0);
    let positive = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.ms))
            .filter(|ms| *ms > 0.0)
    };
    let y_max = positive().fold(0.0f64, f64::max);
    let y_min = positive().fold(f64::INFINITY, f64::min);
    let log = match scale {
        Scale::Linear => false,
        Scale::Log => y_max > 0.0,
        Scale::Auto => y_max > 0.0 && y_max / y_min >= 100.0,
    };

    let root = SVGBackend::with_string(svg, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption("Latency by percentile", ("sans-serif", 22))
        .margin(16)
        // Room for the last percentile label ("99.999%"), centred on the
        // right edge of the plot.
        .margin_right(40)
        .x_label_area_size(44)
        .y_label_area_size(64);
    if log {
        let y = (y_min / 1.5)..(y_max * 1.5);
        let chart = builder.build_cartesian_2d(0f64..x_max, y.log_scale())?;
        plot(chart, series, x_max, "latency (ms, log scale)")?;
    } else {
        let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
        let chart = builder.build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
        plot(chart, series, x_max, "latency (ms)")?;
    }
    root.present()?;
    Ok(())
}

/// Draws the mesh, every series and the legend on `chart`.
fn plot<'a, Y>(
    mut chart: ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    series: &[Series<'_>],
    x_max: f64,
    y_desc: &str,
) -> Result<(), Box<dyn std::error::Error>>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc(y_desc)
        .x_labels(x_max.ceil() as usize + 1)
        .x_label_formatter(&|x| percent_label(*x))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points
                    .iter()
                    .filter(|p| p.ms > 0.0)
                    .map(|p| (tail(p), p.ms)),
                color.stroke_width(2),
            ))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// `x` = log10(1 / (1 - q)) as a percentile: 0 → 0%, 1 → 90%, 2 → 99%.
fn percent_label(x: f64) -> String {
    let q = 100.0 * (1.0 - 10f64.powf(-x));
    format!("{}%", crate::stats::trimmed(q, 5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_labels_read_as_percentiles() {
        assert_eq!(percent_label(0.0), "0%");
        assert_eq!(percent_label(1.0), "90%");
        assert_eq!(percent_label(3.0), "99.9%");
    }

    #[test]
    fn every_run_is_drawn_and_named() {
        let a = [
            Point {
                percentile: 50.0,
                ms: 0.1,
            },
            Point {
                percentile: 99.9,
                ms: 2.0,
            },
        ];
        let b = [
            Point {
                percentile: 50.0,
                ms: 0.2,
            },
            Point {
                percentile: 99.0,
                ms: 9.0,
            },
        ];
        let svg = svg(
            &[
                Series {
                    label: "before".into(),
                    points: &a,
                },
                Series {
                    label: "after".into(),
                    points: &b,
                },
            ],
            Scale::Linear,
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("\nbefore\n") && svg.contains("\nafter\n"));
        assert_eq!(
            svg.matches(r#"stroke-width="2""#).count(),
            2 + 2,
            "two lines and their two legend marks"
        );
    }

    #[test]
    fn a_tail_two_decades_above_the_median_gets_a_log_axis() {
        let points = [
            Point {
                percentile: 50.0,
                ms: 0.05,
            },
            Point {
                percentile: 99.999,
                ms: 20.0,
            },
        ];
        let one = |scale| {
            svg(
                &[Series {
                    label: "run".into(),
                    points: &points,
                }],
                scale,
            )
            .unwrap()
        };
        assert!(one(Scale::Auto).contains("log scale"));
        assert!(!one(Scale::Linear).contains("log scale"));
        // The last label is drawn inside the picture (900 wide).
        let auto = one(Scale::Auto);
        let label = auto
            .find("\n99.999%\n")
            .unwrap_or_else(|| panic!("the last label: {auto}"));
        let x: f64 = auto[..label]
            .rsplit("x=\"")
            .next()
            .and_then(|rest| rest.split('"').next())
            .and_then(|x| x.parse().ok())
            .unwrap();
        // Centred on x, about 35 px wide at this size.
        assert!(x + 20.0 < 900.0, "label at {x}");
    }
}
