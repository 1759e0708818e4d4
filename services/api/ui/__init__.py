"""The web dashboard at ``/ui``: static pages shipped in the package, a cookie session
that the JSON API's own routes accept beside Bearer keys, and the headers (CSP) that keep
the pages' script to the files served here."""
