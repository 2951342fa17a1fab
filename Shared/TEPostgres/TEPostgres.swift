// TEPostgres: see its issue; filled in by its owner.
