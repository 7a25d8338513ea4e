"""Our file formats (NeXus tables, grids, masks), JSON summaries and atomic writes."""
