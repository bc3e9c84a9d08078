"""Plain handler functions per event family. They never import the Functions runtime."""
