"""The composite worker (the MCU role): a room mixed into one stream for RTMP, HLS or MP4.

It is a client of the server like any other, run as its own process, and the one place
in aiosfu where media is decoded and encoded again: the SFU itself never decodes.
"""
