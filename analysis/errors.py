"""The one exception type the analysis raises for bad input (the CLI prints it as one line)."""


class AnalysisError(Exception):
    """Input that cannot be analysed: a missing or empty directory, no readable results, a bad CSV."""
