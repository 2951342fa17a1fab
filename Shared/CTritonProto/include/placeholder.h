/* generated protobuf-c code goes here (make proto) */
