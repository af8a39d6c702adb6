server2
