"""The Gram engine: per-layer adapters and the exact routes that accumulate ``sum x x^T`` (docs/method.md section 2).

Floor 0 of the package: imports torch only, never :mod:`pgu`'s core or anything above it.

* :mod:`pgu.gram.layers` - the adapter registry (looked up along the class hierarchy), one
  adapter per layer kind: the rows a layer multiplies its weight with.
* :mod:`pgu.gram.conv2d_geometry` - a Conv2d's true geometry (stride, padding, dilation).
* :mod:`pgu.gram.conv_gram`, :mod:`pgu.gram.conv_gram_rows` - a conv's patch Gram without
  unfolding, by tap and row offsets.
* :mod:`pgu.gram.accumulators` - the accumulators that choose a route and add up a batch.
* :mod:`pgu.gram.triangle` - the upper-triangle block product.
"""
