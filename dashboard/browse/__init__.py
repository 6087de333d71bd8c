"""What the browse pages show, read from DuckDB only (never torch): queries, filters, charts, examples, triage form, exports."""
