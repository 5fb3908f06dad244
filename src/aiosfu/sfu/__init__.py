"""The media plane: forwards RTP between peer connections without decoding it."""
