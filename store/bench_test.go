package store_test

func cleanupBench() {}
