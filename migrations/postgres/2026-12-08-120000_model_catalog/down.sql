DROP TABLE model_catalog;
