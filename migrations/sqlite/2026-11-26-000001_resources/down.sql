DROP TABLE resources;
ALTER TABLE api_keys DROP COLUMN gift_balance;
ALTER TABLE api_keys DROP COLUMN charge_balance;
