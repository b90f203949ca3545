"""nlptk-plugin-example: the `score` task (see score_task.py), found by nlptk through an entry point."""
