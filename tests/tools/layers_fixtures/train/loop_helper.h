// Included by train/loop.cc without its folder.
