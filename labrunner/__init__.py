"""labrunner: run the e-mail lab over a cloud host with one command and write its report."""

__version__ = "0.1.0"
