"""Comparison methods, one each: `baselines.<name>` holds the client side and the strategy and
registers the method by name when imported (flayer.protocol.catalog imports every module here);
`baselines.settings.<name>` holds its settings, which import no torch. Adding a method means
adding those two modules and its `conf/strategy/<name>.yaml`."""
