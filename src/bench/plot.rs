//! `--plot`: latency by percentile as an SVG chart, one line per run, in
//! the style of HdrHistogram's percentile plots: the x axis stretches the
//! tail (50%, 90%, 99%, 99.9%, ... equally spaced), where servers differ.

use plotters::prelude::*;

use super::report::Point;

/// One run's line on the chart.
pub struct Series<'a> {
    /// The legend.
    pub label: String,
    /// Its distribution, as [`Results`](super::Results) holds it.
    pub points: &'a [Point],
}

/// Renders the chart as an SVG document.
pub fn svg(series: &[Series<'_>]) -> Result<String, String> {
    let mut svg = String::new();
    draw(&mut svg, series).map_err(|e| format!("cannot draw the chart: {e}"))?;
    Ok(svg)
}

fn draw(svg: &mut String, series: &[Series<'_>]) -> Result<(), Box<dyn std::error::Error>> {
    let tail = |p: &Point| -(1.0 - (p.percentile / 100.0).min(0.99999)).log10();
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(tail))
        .fold(1.0f64, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.ms))
        .fold(0.0f64, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };

    let root = SVGBackend::with_string(svg, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency by percentile", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(x_max.ceil() as usize + 1)
        .x_label_formatter(&|x| percent_label(*x))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|p| (tail(p), p.ms)),
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
    root.present()?;
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
        let svg = svg(&[
            Series {
                label: "before".into(),
                points: &a,
            },
            Series {
                label: "after".into(),
                points: &b,
            },
        ])
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("\nbefore\n") && svg.contains("\nafter\n"));
        assert_eq!(
            svg.matches(r#"stroke-width="2""#).count(),
            2 + 2,
            "two lines and their two legend marks"
        );
    }
}
