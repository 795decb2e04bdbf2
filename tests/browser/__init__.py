"""Browser tests of the built book (need `--site`)."""
