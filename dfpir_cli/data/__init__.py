"""Photos on disk and photos made on purpose: test and training sets, the data folder, degradation synthesis."""
