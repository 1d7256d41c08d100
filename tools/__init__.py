"""Developer chores that are neither product nor test bed (``make mutation``)."""
