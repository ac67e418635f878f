"""Reports on a sweep: its runs read from the tracking store, compared, drawn and written as HTML and Markdown.

The modules, in the order data flows through them:
- `source`: a read-only view of the store (SQL on SQLite, the MLflow client elsewhere);
- `load`: the sweep's runs as one frame (the latest run per grid point), how complete its grid is, and metric
  histories on demand, cached as Parquet;
- `ranking` and `curves`: configurations ranked, times to target, curves binned and pooled over seeds;
- `view`: everything about one task, computed once and handed to every table and figure;
- `tables` and `figures/` (one FigureKind per figure: title, caption and drawing together);
- `render` (HTML, Markdown) and `build` (the output folder; figures drawn in parallel);
- `publish` (attach to the sweep's parent run) and `cli` (the `harness-report` command).
Nothing here imports the training or sweep code: the report knows only what the store holds (harness.tracking).
"""
