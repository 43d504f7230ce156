"""The only Ray code: Ray Data pipelines and Ray Train loops."""
