"""Reading text out of uploaded files, without Django, so it runs in a child process with resource
limits (`documents.extract.child`). `sniff` checks a file before it is stored; `formats` reads each
format into anchored parts; `runner` starts the child and streams its parts back."""
