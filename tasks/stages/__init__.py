"""Stages: ensure_cluster … teardown, one module each; a stage imports the layers below, never another stage."""
