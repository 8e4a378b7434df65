"""claimflow: streaming triage of health-insurance claims."""

__version__ = "0.1.0"
