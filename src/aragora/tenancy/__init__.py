"""Workspaces, API tokens, principals and quotas."""
