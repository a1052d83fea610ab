"""The builder-witness node: HotStuff (DiemBFT v4) consensus, cosigning, validation, monitor."""
