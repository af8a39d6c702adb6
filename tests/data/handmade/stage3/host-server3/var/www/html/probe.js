server3
