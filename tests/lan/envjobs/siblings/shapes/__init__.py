"""A sibling package of job.py."""
