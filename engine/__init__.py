"""pingpost: a ping-post lead exchange.

The package reads top to bottom the way a lead flows: ``server`` decodes HTTP into
``schema`` Structs, ``auction`` asks ``targeting`` who may bid, ``buyers`` asks them in
parallel, ``store`` keeps what must outlive a request.
"""

__version__ = "0.1.0"
