"""Answers for the business: the report and the queries behind it."""
