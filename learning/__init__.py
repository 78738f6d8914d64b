"""The learning manager: learns from every trade, error and market condition. Never imports torch,
SB3 or gymnasium."""
