"""Test plugins for uipd."""
