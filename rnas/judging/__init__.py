"""Judging searches against ground truth, apart from the search itself: truth tables and the tuning
protocol (``truth``), a table as the search's oracle (``oracle``), ranking statistics (``rank_stats``),
and strategies run against a table (``table_search``, with its command in ``benchmark``)."""
