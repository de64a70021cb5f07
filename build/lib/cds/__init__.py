"""hipflex-cds: a CDS Hooks 2.0 service for end-range hip-flexion weakness and anterior knee pain."""

__version__ = "0.1.0"
