"""The outside: HTTP, the WebSocket signaling protocol (seed 002), sessions."""
