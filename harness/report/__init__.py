"""Reports on a sweep: its runs read from MLflow into one tidy DataFrame, then figures, tables and HTML.

Data flows one way: `load` (MLflow or the Parquet cache) -> `configs`/`curves`/`budget`/`profiles` (pandas)
-> `figures`/`tables` -> `html`/`markdown` -> `build` (the output folder) <- `cli`. Nothing here imports the
training code: the report only knows what the store holds.
"""
