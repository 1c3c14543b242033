"""Application code with the five kinds of retainer, for the memory tests."""
