"""Population runs: the rules over a whole Bulk FHIR export, on Dask, to see what a rule change would do."""
