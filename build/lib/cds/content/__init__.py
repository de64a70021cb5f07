"""Clinical content as data: rule, terminology and card files read into checked models (bottom layer)."""
