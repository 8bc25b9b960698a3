"""Reading and writing crystals: one entry point (:mod:`.crystals`) over every input format
(:mod:`.formats` for CIF-based inputs, :mod:`.codecs` for extxyz and JSON, :mod:`.cif` for CIF
text), atomic writers, and what a data set holds (:mod:`.data_info`)."""
