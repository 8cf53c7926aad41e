DROP TABLE client_ledger;
DELETE FROM settings WHERE name = 'log_cleared_before';
