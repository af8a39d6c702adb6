"""haconform: prove that an HA HAProxy deployment does what its runbook promises."""
