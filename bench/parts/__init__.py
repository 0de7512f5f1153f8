"""One module per part of the bench; each has `async def run(bench: Bench) -> PartRound`."""
