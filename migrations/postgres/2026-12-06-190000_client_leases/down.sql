DROP TABLE client_leases;
