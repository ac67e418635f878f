"""The report's figures, one module per kind. Each function takes frames and a palette and returns a matplotlib
Figure (or None when there is nothing to draw); `style.save` writes it as PNG and SVG.

Figures are built as `matplotlib.figure.Figure` objects, never through pyplot: no global figure registry to leak
or close, and no GUI backend is ever touched (rendering is Agg for PNG, the SVG backend for SVG), so reports
run headless on servers and in CI.
"""
