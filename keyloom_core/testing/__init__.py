"""Test helpers for Keyloom: provider emulators and their building blocks."""
